// Runs graphql-http's server audits against GHVAULT_URL, each request carrying
// GHVAULT_AUTHORIZATION (ghvault answers anonymous requests 401 before reading them),
// and prints one JSON list of {id, name, status, reason}.
import { serverAudits } from "graphql-http";

const url = process.env.GHVAULT_URL;
const authorization = process.env.GHVAULT_AUTHORIZATION;

function authorized(input, init = {}) {
  const headers = new Headers(init.headers);
  headers.set("authorization", authorization);
  return fetch(input, { ...init, headers });
}

const results = [];
for (const { id, name, fn } of serverAudits({ url, fetchFn: authorized })) {
  const result = await fn();
  results.push({ id, name, status: result.status, reason: result.reason ?? null });
}
process.stdout.write(JSON.stringify(results));
