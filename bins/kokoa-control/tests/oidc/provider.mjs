// A local OpenID provider for the control plane's single sign-on test, configured from
// the environment by the test that starts it. Accounts: any login name is accepted as an
// e-mail address (its password is not checked); GROUPS maps some of them to groups.
//
//   ISSUER=http://127.0.0.1:PORT PORT=... CLIENT_ID=... CLIENT_SECRET=... \
//   REDIRECT_URI=... GROUPS='{"amy@kokoa.test":["ops"]}' node provider.mjs
import Provider from 'oidc-provider';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const groups = JSON.parse(process.env.GROUPS || '{}');

const provider = new Provider(env('ISSUER'), {
  clients: [{
    client_id: env('CLIENT_ID'),
    client_secret: env('CLIENT_SECRET'),
    redirect_uris: [env('REDIRECT_URI')],
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
  pkce: { required: () => true },
  cookies: { keys: ['kokoa-test-only-cookie-key'] },
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, email: id, email_verified: true, groups: groups[id] || [] }),
  }),
});

provider.listen(Number(env('PORT')), '127.0.0.1', () => {
  process.stdout.write(`listening ${env('ISSUER')}\n`);
});
