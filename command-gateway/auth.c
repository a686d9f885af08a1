/* auth.c: JWT bearer tokens checked with libjwt; the key is checked at start with OpenSSL. */
#include "auth.h"

#include "domain/envelope.h"
#include "core/xalloc.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HS256_MIN_SECRET 32 /* RFC 7518 3.2: a key as long as the hash */
#define RSA_MIN_BITS     2048
#define KEY_FILE_MAX     ((size_t)64 * 1024)

struct auth {
    jwt_alg_t alg;
    unsigned char *key; /* the secret, or the PEM text */
    size_t key_len;
    char *issuer, *audience, *tenant_claim;
    long long leeway_s;
};

_Static_assert(AUTH_TENANT_MAX == ENVELOPE_MAX_TENANT_LEN,
               "one tenant rule for the whole pipeline");

bool auth_tenant_valid(const char *s)
{
    return envelope_tenant_valid(s, strlen(s));
}

/* The whole file, NUL-terminated; NULL with err. */
static unsigned char *read_key_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "auth.key_file: %s: %s", path, strerror(errno));
        return NULL;
    }
    unsigned char *buf = xmalloc(KEY_FILE_MAX + 1);
    size_t n = fread(buf, 1, KEY_FILE_MAX + 1, f);
    bool failed = ferror(f);
    fclose(f);
    if (failed || n > KEY_FILE_MAX) {
        snprintf(err, errlen, "auth.key_file: %s: %s", path,
                 failed ? "cannot be read" : "larger than 64 KiB");
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* A public key of the algorithm's type, or err. */
static int check_public_key(jwt_alg_t alg, const unsigned char *pem, size_t len, char *err,
                            size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *k = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    int rc = 0;
    if (!k) {
        snprintf(err, errlen, "auth.key_file: not a PEM public key (\"BEGIN PUBLIC KEY\")");
        return -1;
    }
    if (alg == JWT_ALG_RS256) {
        if (EVP_PKEY_get_base_id(k) != EVP_PKEY_RSA) {
            snprintf(err, errlen, "auth.key_file: RS256 needs an RSA public key");
            rc = -1;
        } else if (EVP_PKEY_get_bits(k) < RSA_MIN_BITS) {
            snprintf(err, errlen, "auth.key_file: an RSA key of %d bits; at least %d are needed",
                     EVP_PKEY_get_bits(k), RSA_MIN_BITS);
            rc = -1;
        }
    } else {
        char group[64] = "";
        size_t glen = 0;
        if (EVP_PKEY_get_base_id(k) != EVP_PKEY_EC ||
            !EVP_PKEY_get_utf8_string_param(k, "group", group, sizeof(group), &glen) ||
            strcmp(group, "prime256v1") != 0) {
            snprintf(err, errlen, "auth.key_file: ES256 needs an EC public key on P-256");
            rc = -1;
        }
    }
    EVP_PKEY_free(k);
    return rc;
}

auth *auth_new(const auth_config *cfg, char *err, size_t errlen)
{
    jwt_alg_t alg = JWT_ALG_INVAL;
    if (strcmp(cfg->algorithm, "HS256") == 0)
        alg = JWT_ALG_HS256;
    else if (strcmp(cfg->algorithm, "RS256") == 0)
        alg = JWT_ALG_RS256;
    else if (strcmp(cfg->algorithm, "ES256") == 0)
        alg = JWT_ALG_ES256;
    if (alg == JWT_ALG_INVAL) {
        snprintf(err, errlen, "auth.algorithm: '%s' is not one of HS256, RS256, ES256",
                 cfg->algorithm);
        return NULL;
    }
    if (!*cfg->key_file) {
        snprintf(err, errlen,
                 "auth.key_file: required when auth.mode is jwt (or set auth.mode=off)");
        return NULL;
    }
    if (!*cfg->tenant_claim) {
        snprintf(err, errlen, "auth.tenant_claim: must name a claim");
        return NULL;
    }
    size_t len;
    unsigned char *key = read_key_file(cfg->key_file, &len, err, errlen);
    if (!key)
        return NULL;
    if (alg == JWT_ALG_HS256) {
        /* The file's bytes, less one line end an editor or `echo` adds. */
        if (len > 0 && key[len - 1] == '\n')
            key[--len] = 0;
        if (len > 0 && key[len - 1] == '\r')
            key[--len] = 0;
        if (len < HS256_MIN_SECRET) {
            snprintf(err, errlen,
                     "auth.key_file: an HS256 secret of %zu bytes; at least %d are "
                     "needed",
                     len, HS256_MIN_SECRET);
            free(key);
            return NULL;
        }
    } else if (check_public_key(alg, key, len, err, errlen) != 0) {
        free(key);
        return NULL;
    }
    auth *a = xcalloc(1, sizeof(*a));
    a->alg = alg;
    a->key = key;
    a->key_len = len;
    a->issuer = xstrdup(cfg->issuer);
    a->audience = xstrdup(cfg->audience);
    a->tenant_claim = xstrdup(cfg->tenant_claim);
    a->leeway_s = cfg->leeway_s;
    return a;
}

void auth_free(auth *a)
{
    if (!a)
        return;
    if (a->alg == JWT_ALG_HS256)
        memset(a->key, 0, a->key_len);
    free(a->key);
    free(a->issuer);
    free(a->audience);
    free(a->tenant_claim);
    free(a);
}

static bool fail(auth_result *out, int status, const char *error, const char *detail,
                 const char *scope)
{
    out->status = status;
    snprintf(out->detail, sizeof(out->detail), "%s", detail);
    if (!error)
        snprintf(out->challenge, sizeof(out->challenge), "Bearer realm=\"cqrs\"");
    else if (scope)
        snprintf(out->challenge, sizeof(out->challenge),
                 "Bearer realm=\"cqrs\", error=\"%s\", scope=\"%s\"", error, scope);
    else
        snprintf(out->challenge, sizeof(out->challenge),
                 "Bearer realm=\"cqrs\", error=\"%s\", error_description=\"%s\"", error, detail);
    return false;
}

static bool invalid(auth_result *out, const char *detail)
{
    return fail(out, 401, "invalid_token", detail, NULL);
}

/* True if the space-separated list holds word. */
static bool words_hold(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *s = list; *s;) {
        s += strspn(s, " ");
        size_t len = strcspn(s, " ");
        if (len == n && strncmp(s, word, n) == 0)
            return true;
        s += len;
    }
    return false;
}

static bool has_scope(const json_t *claims, const char *scope)
{
    const json_t *s = json_object_get(claims, "scope");
    if (json_is_string(s) && words_hold(json_string_value(s), scope))
        return true;
    const json_t *scp = json_object_get(claims, "scp");
    if (json_is_string(scp))
        return words_hold(json_string_value(scp), scope);
    size_t i;
    const json_t *v;
    json_array_foreach(scp, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), scope) == 0)
            return true;
    }
    return false;
}

static bool audience_holds(const json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    size_t i;
    const json_t *v;
    json_array_foreach(aud, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), want) == 0)
            return true;
    }
    return false;
}

/* The checks on the verified claims; fills out->tenant. */
static bool check_claims(const auth *a, const json_t *claims, const char *scope, long long now_s,
                         auth_result *out)
{
    const json_t *exp = json_object_get(claims, "exp");
    if (!json_is_number(exp))
        return invalid(out, "the token has no exp");
    if ((double)now_s > json_number_value(exp) + (double)a->leeway_s)
        return invalid(out, "the token has expired");
    const json_t *nbf = json_object_get(claims, "nbf");
    if (nbf && !json_is_number(nbf))
        return invalid(out, "the token's nbf is not a number");
    if (nbf && (double)now_s + (double)a->leeway_s < json_number_value(nbf))
        return invalid(out, "the token is not valid yet");
    if (*a->issuer) {
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        if (!iss || strcmp(iss, a->issuer) != 0)
            return invalid(out, "the token's issuer is not accepted");
    }
    if (*a->audience && !audience_holds(json_object_get(claims, "aud"), a->audience))
        return invalid(out, "the token is not meant for this audience");
    const char *tenant = json_string_value(json_object_get(claims, a->tenant_claim));
    if (!tenant || !auth_tenant_valid(tenant))
        return invalid(out, "the token names no valid tenant");
    if (scope && !has_scope(claims, scope)) {
        char detail[96];
        snprintf(detail, sizeof(detail), "the token lacks the scope %s", scope);
        return fail(out, 403, "insufficient_scope", detail, scope);
    }
    snprintf(out->tenant, sizeof(out->tenant), "%s", tenant);
    out->status = 0;
    return true;
}

/*
 * True for a JWS compact serialization as RFC 7515 §7.1 writes it: three base64url parts without
 * padding, two dots. libjwt lets "=" padding, a trailing "." and more parts through.
 */
static bool compact_form(const char *token)
{
    size_t dots = 0, part = 0;
    for (const char *s = token;; s++) {
        if (*s == '.' || *s == '\0') {
            if (part % 4 == 1) /* no base64 text leaves one character over */
                return false;
            if (*s == '\0')
                return dots == 2;
            dots++;
            part = 0;
        } else if (isalnum((unsigned char)*s) || *s == '-' || *s == '_') {
            part++;
        } else {
            return false;
        }
    }
}

bool auth_check(const auth *a, const char *authorization, const char *scope, long long now_s,
                auth_result *out)
{
    memset(out, 0, sizeof(*out));
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return fail(out, 401, NULL, "a bearer token is required", NULL);
    const char *token = authorization + 7;
    token += strspn(token, " ");
    if (!*token)
        return fail(out, 401, NULL, "a bearer token is required", NULL);
    if (!compact_form(token))
        return invalid(out, "the token is not three unpadded base64url parts");
    jwt_t *jwt = NULL;
    if (jwt_decode(&jwt, token, a->key, (int)a->key_len) != 0 || !jwt) {
        jwt_free(jwt);
        return invalid(out, "the token is malformed or its signature does not verify");
    }
    /* libjwt verifies with the algorithm the token names: it must be ours. */
    if (jwt_get_alg(jwt) != a->alg) {
        jwt_free(jwt);
        return invalid(out, "the token is signed with another algorithm");
    }
    /* RFC 7515 §4.1.11: crit names extensions the recipient must understand; we know none. */
    char *crit = jwt_get_headers_json(jwt, "crit");
    if (crit) {
        free(crit);
        jwt_free(jwt);
        return invalid(out, "the token has a crit header: no extension is understood");
    }
    char *text = jwt_get_grants_json(jwt, NULL);
    jwt_free(jwt);
    json_t *claims = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    bool ok = json_is_object(claims) ? check_claims(a, claims, scope, now_s, out)
                                     : invalid(out, "the token's claims are not an object");
    json_decref(claims);
    return ok;
}
