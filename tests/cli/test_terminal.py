"""palaver chat: a terminal chat with the engine here, or with a running server."""

from commands import palaver


def test_chat_answers_each_message_in_turn(cli_env, gguf_chat_model):
    env = {**cli_env, "PALAVER_MODEL": str(gguf_chat_model)}  # the native step: no transformers to import
    result = palaver("chat", env=env, stdin="hello there\nand again\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("palaver> ") == 2 and "Traceback" not in result.stderr


def test_chat_with_a_running_server(server, cli_env):
    result = palaver("chat", "--url", server, env=cli_env, stdin="hello\n")
    assert result.returncode == 0, result.stderr
    reply = result.stdout.split("palaver> ", 1)[1].strip()
    assert reply and "error" not in reply
