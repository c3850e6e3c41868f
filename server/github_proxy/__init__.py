"""The GitHub proxy: workers act as the user on GitHub without ever holding the user's token.

A SERVICE issues a capability for a user (repositories, READ or WRITE, a
TTL); the worker sends it to `/github/api/...` (REST) or uses it as the git
password for `/github/git/{owner}/{name}.git` (smart HTTP). ghvault checks
what the capability allows, swaps in the user's current access token,
streams both ways to the configured GitHub host, and audits every write.

- capabilities.py: issue, revoke, redeem and end capabilities (stored as hashes);
- scope.py: what a request targets and whether a capability allows it (pure);
- forwarding.py: which headers cross, and GitHub's URLs rewritten back to ghvault;
- upstream.py: where each route forwards, how it presents the token, the bodies;
- rate_limit.py: requests per capability;
- tokens.py: the user's token for a request (checked out, reused while current);
- relay.py: the request handlers, from the capability to GitHub's answer;
- mutations.py: issueGithubCapability and revokeGithubCapability.

The table lives with the others (server/storage/tables.py), since migrations
and engines need every table in one place.
"""
