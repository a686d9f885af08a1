/*
 * auth.h: bearer-token authentication of API requests (RFC 6750). Tokens are JWTs (RFC 7519)
 * verified by libjwt against one configured key: an HS256 secret, or an RS256 / ES256 public
 * key. The token's algorithm must be the configured one (no "none", no algorithm confusion);
 * exp is required, nbf, iss and aud are checked; the tenant comes from a configured claim.
 * Stateless: any replica validates any token.
 */
#ifndef CQRS_AUTH_H
#define CQRS_AUTH_H

#include <stdbool.h>
#include <stddef.h>

/* Longest tenant name; a tenant is 1..AUTH_TENANT_MAX of [A-Za-z0-9._-]: the wire contract's
   rule (ENVELOPE_MAX_TENANT_LEN, envelope_tenant_valid()), which the processor checks again. */
#define AUTH_TENANT_MAX 64

typedef struct auth_config {
    const char *algorithm;    /* "HS256", "RS256" or "ES256" */
    const char *key_file;     /* the HS256 secret, or the PEM public key */
    const char *issuer;       /* "" or the iss every token must carry */
    const char *audience;     /* "" or a value aud must hold */
    const char *tenant_claim; /* the claim naming the tenant */
    long long leeway_s;       /* clock skew allowed on exp and nbf */
} auth_config;

typedef struct auth auth;

/*
 * Reads and checks the key (a secret of at least 32 bytes; a public key of the algorithm's type:
 * RSA of at least 2048 bits, or EC on P-256). Returns NULL with err naming the bad key.
 */
auth *auth_new(const auth_config *cfg, char *err, size_t errlen);
void auth_free(auth *a);

/* What a request's credentials come to. */
typedef struct auth_result {
    int status;          /* 0: authenticated; 401: no valid token; 403: a scope is missing */
    char detail[160];    /* why, for the problem body */
    char challenge[256]; /* the WWW-Authenticate value for a 401 or 403 */
    char tenant[AUTH_TENANT_MAX + 1];
} auth_result;

/*
 * Checks an Authorization header value (NULL when absent) at time now_s (seconds since the
 * epoch). scope, when not NULL, must be among the token's scopes: the space-separated "scope"
 * claim (RFC 8693) or the "scp" claim, a string or an array of strings. Returns out->status == 0.
 */
bool auth_check(const auth *a, const char *authorization, const char *scope, long long now_s,
                auth_result *out);

/* True if s is a valid tenant name. */
bool auth_tenant_valid(const char *s);

#endif
