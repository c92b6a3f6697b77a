"""The app's services: built once by the factory, reached through services(), or built by a test itself."""

from app import create_app
from palaver.web.app import build_services
from palaver.web.services import services as palaver_services


def test_the_factory_builds_the_services_once_and_a_test_may_build_its_own(make_settings, chat_model):
    settings = make_settings(chat_model, client_share=3)
    services = build_services(settings)
    app = create_app(services=services)
    try:
        with app.app_context():
            assert palaver_services() is services and services.shares.share == 3
        assert services.chat.backend is services.backend and services.chat.presets is services.presets
    finally:
        services.close()
