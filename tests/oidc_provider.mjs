// A real OpenID Connect provider for the tests (panva's oidc-provider): two clients, people the test names, and
// interactions that sign in and consent at once. Usage: node tests/oidc_provider.mjs REDIRECT_URI; prints
// {"issuer": ...} once it listens. Test-only controls, under /test/:
//   /test/account?sub=&email=&email_verified=&groups=a,b   the person the next sign-in is (until changed)
//   /test/swap-audience?client=ID                          the next token response's ID token is issued to ID
import http from 'node:http';
import Provider from 'oidc-provider';

const redirectUri = process.argv[2];
const accounts = new Map();
let current = 'ada';
let swapAudienceTo = null;
accounts.set(current, { sub: current, email: 'ada@example.com', email_verified: true, name: 'Ada', groups: [] });

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const client = (id) => ({
    client_id: id,
    client_secret: `${id}-secret`,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  });
  const provider = new Provider(issuer, {
    clients: [client('palaver'), client('other-app')],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'groups'] },
    findAccount: (ctx, sub) => ({ accountId: sub, claims: () => accounts.get(sub) }),
    features: { devInteractions: { enabled: false } },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    cookies: { keys: ['only-for-tests'] },
  });

  // A token response whose ID token is the provider's own, signed with its keys, for another of its clients.
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/token' && ctx.status === 200 && swapAudienceTo && ctx.body.id_token) {
      const original = JSON.parse(Buffer.from(ctx.body.id_token.split('.')[1], 'base64url'));
      const other = await provider.Client.find(swapAudienceTo);
      const token = new provider.IdToken({ sub: original.sub }, { ctx, client: other });
      token.scope = 'openid';
      token.set('nonce', original.nonce);
      ctx.body = { ...ctx.body, id_token: await token.issue({ use: 'idtoken' }) };
      swapAudienceTo = null;
    }
  });

  const callback = provider.callback();
  server.on('request', async (req, res) => {
    const url = new URL(req.url, issuer);
    try {
      if (url.pathname === '/test/account') {
        const groups = url.searchParams.get('groups');
        current = url.searchParams.get('sub');
        accounts.set(current, {
          sub: current,
          email: url.searchParams.get('email'),
          email_verified: url.searchParams.get('email_verified') !== 'false',
          name: current,
          groups: groups ? groups.split(',') : [],
        });
        res.end('ok');
      } else if (url.pathname === '/test/swap-audience') {
        swapAudienceTo = url.searchParams.get('client');
        res.end('ok');
      } else if (url.pathname.startsWith('/interaction/')) {
        await finishInteraction(provider, req, res);
      } else {
        callback(req, res);
      }
    } catch (error) {
      console.error(error);
      res.statusCode = 500;
      res.end(String(error));
    }
  });
  console.log(JSON.stringify({ issuer }));
});

// Sign the current person in, then consent to whatever the client asked for.
async function finishInteraction(provider, req, res) {
  const { prompt, params, session } = await provider.interactionDetails(req, res);
  if (prompt.name === 'login') {
    await provider.interactionFinished(req, res, { login: { accountId: current } }, { mergeWithLastSubmission: false });
    return;
  }
  const grant = new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}
