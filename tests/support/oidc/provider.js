// The OpenID provider of the sign-in test: panva's oidc-provider (an
// OpenID-certified implementation), on loopback, with its development
// login and consent pages, one confidential client that must use PKCE, and
// two people:
//   alice  groups ["team-data", "other"]
//   bob    groups []
//
// node provider.js --modules DIR --port PORT --redirect-uri URI --post-logout-redirect-uri URI
//   DIR: the node_modules folder oidc-provider was installed into
//   (scripts/test: target/test-oidc-provider/node_modules).
// The client id is `envstore`; its secret comes from OIDC_CLIENT_SECRET.
// Prints `issuer <url>` on stdout once it listens; stops on SIGTERM or when
// stdin closes (its test ended).

import { createServer } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    modules: { type: 'string' },
    port: { type: 'string', default: '0' },
    'redirect-uri': { type: 'string' },
    'post-logout-redirect-uri': { type: 'string' },
  },
});
for (const required of ['modules', 'redirect-uri', 'post-logout-redirect-uri']) {
  if (!values[required]) {
    console.error(`provider.js: --${required} is required`);
    process.exit(2);
  }
}
const secret = process.env.OIDC_CLIENT_SECRET;
if (!secret) {
  console.error('provider.js: OIDC_CLIENT_SECRET is required');
  process.exit(2);
}

const { default: Provider } = await import(
  pathToFileURL(join(values.modules, 'oidc-provider', 'lib', 'index.js')).href
);

const people = {
  alice: {
    preferred_username: 'alice',
    name: 'Alice Example',
    email: 'alice@example.org',
    email_verified: true,
    groups: ['team-data', 'other'],
  },
  bob: {
    preferred_username: 'bob',
    name: 'Bob Example',
    email: 'bob@example.org',
    email_verified: true,
    groups: [],
  },
};

const server = createServer();
await new Promise((resolve) => server.listen(Number(values.port), '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'envstore',
      client_secret: secret,
      redirect_uris: [values['redirect-uri']],
      post_logout_redirect_uris: [values['post-logout-redirect-uri']],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  pkce: { required: () => true },
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  scopes: ['openid', 'profile', 'email', 'groups'],
  async findAccount(ctx, id) {
    const person = people[id];
    if (!person) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...person }) };
  },
  cookies: { keys: [secret] },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
});
// The development login page takes any password; an unknown login is
// refused by findAccount.
provider.on('server_error', (ctx, error) => console.error('provider.js: server error', error));

server.on('request', provider.callback());
console.log(`issuer ${issuer}`);

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();
