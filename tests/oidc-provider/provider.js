// A real, third-party OpenID Connect provider (the `oidc-provider` package) on loopback, for the integration
// tests. Usage: node provider.js <port> <keys.json> <clients.json>
//   keys.json    — {"keys": [private JWKs]}; the first key signs (the test fixture owns the keys, so it can
//                  rotate them and build honest attack tokens)
//   clients.json — [{client_id, client_secret, tenant, roles, ttl}] for the client-credentials grant
// Access tokens are JWTs for the resource the client asks for (default urn:sandbox:api), carrying the
// client's tenant and roles. Prints "listening <issuer>" once it accepts connections.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const [port, keysFile, clientsFile] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const jwks = JSON.parse(readFileSync(keysFile, 'utf8'));
const clients = JSON.parse(readFileSync(clientsFile, 'utf8'));
const byId = new Map(clients.map((c) => [c.client_id, c]));

const provider = new Provider(issuer, {
  jwks,
  clients: clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_post',
  })),
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:sandbox:api',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, client) => ({
        scope: 'runner auditor admin',
        audience: resource,
        accessTokenFormat: 'jwt',
        accessTokenTTL: byId.get(client.clientId)?.ttl ?? 300,
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  extraTokenClaims: (ctx, token) => {
    const client = byId.get(token.clientId);
    return client ? { tenant: client.tenant, roles: client.roles } : {};
  },
});

const server = provider.listen(Number(port), '127.0.0.1', () => console.log(`listening ${issuer}`));
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
