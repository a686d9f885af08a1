/*
 * test_auth.c: bearer tokens, checked against keys made for the test (an HS256 secret, RSA and
 * EC P-256 key pairs from OpenSSL) and tokens signed by libjwt; plus the attacks: "alg": "none",
 * algorithm confusion (an HS256 token whose secret is the RSA public key), a tampered payload,
 * another signer, expired and early tokens, and the wrong issuer, audience, tenant or scope.
 */

#include "auth.h"
#include "checkrun.h"
#include "core/xalloc.h"

#include <check.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char dir[] = "/tmp/test_auth_XXXXXX";
static char *rsa_priv, *rsa_pub, *rsa2_priv, *ec_priv, *ec_pub, *rsa1024_pub;
static const char secret[] = "0123456789abcdef0123456789abcdef-hs256";
static long long now;

static char *pem_of(EVP_PKEY *k, bool private_key)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (private_key)
        PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    else
        PEM_write_bio_PUBKEY(b, k);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *out = strndup(data, (size_t)n);
    BIO_free(b);
    return out;
}

static char *path_in_dir(const char *name)
{
    static char path[4][256];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, sizeof(path[0]), "%s/%s", dir, name);
    return p;
}

static const char *write_file(const char *name, const char *text)
{
    char *p = path_in_dir(name);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static void setup_keys(void)
{
    ck_assert_ptr_nonnull(mkdtemp(dir));
    EVP_PKEY *rsa = EVP_RSA_gen(2048), *rsa2 = EVP_RSA_gen(2048), *rsa1024 = EVP_RSA_gen(1024);
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    ck_assert(rsa && rsa2 && rsa1024 && ec);
    rsa_priv = pem_of(rsa, true);
    rsa_pub = pem_of(rsa, false);
    rsa2_priv = pem_of(rsa2, true);
    ec_priv = pem_of(ec, true);
    ec_pub = pem_of(ec, false);
    rsa1024_pub = pem_of(rsa1024, false);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(rsa2);
    EVP_PKEY_free(rsa1024);
    EVP_PKEY_free(ec);
    now = (long long)time(NULL);
}

static void teardown_keys(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    free(rsa_priv);
    free(rsa_pub);
    free(rsa2_priv);
    free(ec_priv);
    free(ec_pub);
    free(rsa1024_pub);
}

/* A token of claims (JSON text) signed with alg and key (a secret, or a private key's PEM). */
static char *mint(jwt_alg_t alg, const char *key, const char *claims)
{
    jwt_t *j = NULL;
    ck_assert_int_eq(jwt_new(&j), 0);
    ck_assert_int_eq(jwt_add_grants_json(j, claims), 0);
    ck_assert_int_eq(jwt_set_alg(j, alg, (const unsigned char *)key, (int)strlen(key)), 0);
    char *token = jwt_encode_str(j);
    jwt_free(j);
    ck_assert_ptr_nonnull(token);
    char *value = xasprintf("Bearer %s", token);
    free(token);
    return value;
}

/* Claims valid now for tenant acme, plus extra members (JSON, may be empty). */
static char *claims(const char *extra)
{
    return xasprintf("{\"sub\":\"u1\",\"tenant\":\"acme\",\"exp\":%lld%s%s}", now + 300,
                     *extra ? "," : "", extra);
}

static auth *make_auth(const char *alg, const char *key_file, const char *iss, const char *aud)
{
    auth_config c = {.algorithm = alg,
                     .key_file = key_file,
                     .issuer = iss,
                     .audience = aud,
                     .tenant_claim = "tenant",
                     .leeway_s = 30};
    char err[256] = "";
    auth *a = auth_new(&c, err, sizeof(err));
    ck_assert_msg(a != NULL, "auth_new: %s", err);
    return a;
}

static auth *hs256(void)
{
    return make_auth("HS256", write_file("secret", secret), "", "");
}

/* Checks the header value with a and scope; returns the status and copies the detail. */
static int check(const auth *a, const char *value, const char *scope, auth_result *r)
{
    bool ok = auth_check(a, value, scope, now, r);
    ck_assert_int_eq(ok, r->status == 0);
    return r->status;
}

START_TEST(each_algorithm_accepts_its_own_tokens)
{
    struct {
        const char *name;
        jwt_alg_t alg;
        const char *sign_key, *verify_key;
    } cases[] = {{"HS256", JWT_ALG_HS256, secret, secret},
                 {"RS256", JWT_ALG_RS256, rsa_priv, rsa_pub},
                 {"ES256", JWT_ALG_ES256, ec_priv, ec_pub}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        auth *a = make_auth(cases[i].name, write_file("key", cases[i].verify_key), "", "");
        char *c = claims("");
        char *h = mint(cases[i].alg, cases[i].sign_key, c);
        auth_result r;
        ck_assert_msg(check(a, h, NULL, &r) == 0, "%s: %s", cases[i].name, r.detail);
        ck_assert_str_eq(r.tenant, "acme");
        free(h);
        free(c);
        auth_free(a);
    }
}
END_TEST

START_TEST(missing_or_other_credentials_get_a_bare_challenge)
{
    auth *a = hs256();
    auth_result r;
    const char *headers[] = {NULL, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer    "};
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        ck_assert_int_eq(check(a, headers[i], NULL, &r), 401);
        ck_assert_str_eq(r.challenge, "Bearer realm=\"cqrs\"");
    }
    auth_free(a);
}
END_TEST

/* base64url without padding, for tokens built by hand. */
static char *b64url(const char *s)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = strlen(s);
    char *out = xmalloc(n * 4 / 3 + 4), *o = out;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)u[i] << 16 | (i + 1 < n ? (unsigned)u[i + 1] << 8 : 0) |
                     (i + 2 < n ? u[i + 2] : 0);
        *o++ = t[v >> 18 & 63];
        *o++ = t[v >> 12 & 63];
        if (i + 1 < n)
            *o++ = t[v >> 6 & 63];
        if (i + 2 < n)
            *o++ = t[v & 63];
    }
    *o = 0;
    return out;
}

START_TEST(alg_none_is_refused)
{
    auth *a = hs256();
    char *c = claims("");
    char *head = b64url("{\"alg\":\"none\",\"typ\":\"JWT\"}"), *body = b64url(c);
    const char *sigs[] = {"", "AAAA"};
    for (size_t i = 0; i < 2; i++) {
        char *h = xasprintf("Bearer %s.%s.%s", head, body, sigs[i]);
        auth_result r;
        ck_assert_int_eq(check(a, h, NULL, &r), 401);
        ck_assert_ptr_nonnull(strstr(r.challenge, "error=\"invalid_token\""));
        free(h);
    }
    /* "None" and "NONE" are no better. */
    char *head2 = b64url("{\"alg\":\"NONE\",\"typ\":\"JWT\"}");
    char *h = xasprintf("Bearer %s.%s.", head2, body);
    auth_result r;
    ck_assert_int_eq(check(a, h, NULL, &r), 401);
    free(h);
    free(head2);
    free(head);
    free(body);
    free(c);
    auth_free(a);
}
END_TEST

/* The classic confusion: an RS256 verifier handed an HS256 token keyed with its public key. */
START_TEST(algorithm_confusion_is_refused)
{
    auth *a = make_auth("RS256", write_file("pub", rsa_pub), "", "");
    char *c = claims("");
    char *h = mint(JWT_ALG_HS256, rsa_pub, c);
    auth_result r;
    ck_assert_int_eq(check(a, h, NULL, &r), 401);
    /* libjwt verifies such a token (it takes the algorithm from the token): our check must. */
    ck_assert_str_eq(r.detail, "the token is signed with another algorithm");
    free(h);
    /* An ES256 token where RS256 is expected: also another algorithm. */
    h = mint(JWT_ALG_ES256, ec_priv, c);
    ck_assert_int_eq(check(a, h, NULL, &r), 401);
    free(h);
    free(c);
    auth_free(a);
}
END_TEST

START_TEST(tampered_or_foreign_signatures_are_refused)
{
    auth *a = make_auth("RS256", write_file("pub", rsa_pub), "", "");
    char *c = claims("");
    char *h = mint(JWT_ALG_RS256, rsa2_priv, c); /* another key pair */
    auth_result r;
    ck_assert_int_eq(check(a, h, NULL, &r), 401);
    free(h);
    /* A valid token whose payload is swapped for another tenant's. */
    h = mint(JWT_ALG_RS256, rsa_priv, c);
    ck_assert_int_eq(check(a, h, NULL, &r), 0);
    char *dot1 = strchr(h, '.'), *dot2 = strchr(dot1 + 1, '.');
    char *evil_claims = xasprintf("{\"sub\":\"u1\",\"tenant\":\"other\",\"exp\":%lld}", now + 300);
    char *evil = b64url(evil_claims);
    char *forged = xasprintf("%.*s.%s%s", (int)(dot1 - h), h, evil, dot2);
    ck_assert_int_eq(check(a, forged, NULL, &r), 401);
    /* Garbage in every part. */
    ck_assert_int_eq(check(a, "Bearer a.b.c", NULL, &r), 401);
    ck_assert_int_eq(check(a, "Bearer ...", NULL, &r), 401);
    ck_assert_int_eq(check(a, "Bearer onlyonepart", NULL, &r), 401);
    free(forged);
    free(evil);
    free(evil_claims);
    free(h);
    free(c);
    auth_free(a);
}
END_TEST

/* RFC 7515 §4.1.11: a crit header names extensions we must understand; we understand none. */
START_TEST(crit_headers_are_refused)
{
    const char *crits[] = {"[\"exp\"]", "[\"b64\"]", "[\"http://example.com/x\"]", "[]"};
    auth *a = hs256();
    char *c = claims("");
    for (size_t i = 0; i < sizeof(crits) / sizeof(crits[0]); i++) {
        jwt_t *j = NULL;
        ck_assert_int_eq(jwt_new(&j), 0);
        ck_assert_int_eq(jwt_add_grants_json(j, c), 0);
        char *hdr = xasprintf("{\"crit\":%s,\"exp\":1}", crits[i]);
        ck_assert_int_eq(jwt_add_headers_json(j, hdr), 0);
        ck_assert_int_eq(
            jwt_set_alg(j, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)), 0);
        char *token = jwt_encode_str(j);
        jwt_free(j);
        char *h = xasprintf("Bearer %s", token);
        auth_result r;
        ck_assert_msg(check(a, h, NULL, &r) == 401, "crit %s accepted", crits[i]);
        ck_assert_ptr_nonnull(strstr(r.detail, "crit"));
        ck_assert_ptr_nonnull(strstr(r.challenge, "error=\"invalid_token\""));
        free(h);
        free(token);
        free(hdr);
    }
    free(c);
    auth_free(a);
}
END_TEST

/* Only the compact form of RFC 7515 §7.1: no "=" padding, exactly three parts. */
START_TEST(only_the_compact_form_is_accepted)
{
    struct {
        const char *name, *alg, *pub;
        jwt_alg_t sign_alg;
        const char *priv;
    } keys[] = {{"HS256", "HS256", secret, JWT_ALG_HS256, secret},
                {"RS256", "RS256", rsa_pub, JWT_ALG_RS256, rsa_priv}};
    for (size_t k = 0; k < 2; k++) {
        auth *a = make_auth(keys[k].alg, write_file("key", keys[k].pub), "", "");
        char *c = claims("");
        char *good = mint(keys[k].sign_alg, keys[k].priv, c);
        auth_result r;
        ck_assert_int_eq(check(a, good, NULL, &r), 0);
        /* The RS256 signature (256 bytes) would be padded with "=="; HS256's (32) with "=". */
        const char *pad = k == 0 ? "=" : "==";
        char *padded = xasprintf("%s%s", good, pad);
        char *trailing = xasprintf("%s.", good);
        char *extra = xasprintf("%s.AAAA", good);
        char *space = xasprintf("%s x", good);
        const char *bad[] = {padded, trailing, extra, space};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            ck_assert_msg(check(a, bad[i], NULL, &r) == 401, "%s: accepted %s", keys[k].name,
                          bad[i] + strlen(good));
            ck_assert_ptr_nonnull(strstr(r.challenge, "error=\"invalid_token\""));
        }
        free(padded);
        free(trailing);
        free(extra);
        free(space);
        free(good);
        free(c);
        auth_free(a);
    }
}
END_TEST

START_TEST(time_claims_are_checked_with_leeway)
{
    auth *a = hs256();
    struct {
        const char *fmt;
        long long offset;
        int status;
    } cases[] = {
        {"{\"tenant\":\"acme\",\"exp\":%lld}", -100, 401},    /* expired */
        {"{\"tenant\":\"acme\",\"exp\":%lld}", -10, 0},       /* within the 30 s leeway */
        {"{\"tenant\":\"acme\",\"exp\":\"%lld\"}", 300, 401}, /* exp as a string */
        {"{\"tenant\":\"acme\",\"iat\":%lld}", 0, 401},       /* no exp */
        {"{\"tenant\":\"acme\",\"exp\":9999999999,\"nbf\":%lld}", 100, 401}, /* early */
        {"{\"tenant\":\"acme\",\"exp\":9999999999,\"nbf\":%lld}", 10, 0},    /* leeway */
        {"{\"tenant\":\"acme\",\"exp\":9999999999,\"nbf\":\"%lld\"}", 0, 401},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *c = xasprintf(cases[i].fmt, now + cases[i].offset);
        char *h = mint(JWT_ALG_HS256, secret, c);
        auth_result r;
        ck_assert_msg(check(a, h, NULL, &r) == cases[i].status, "case %zu (%s): %d %s", i, c,
                      r.status, r.detail);
        free(h);
        free(c);
    }
    auth_free(a);
}
END_TEST

START_TEST(issuer_and_audience_are_checked)
{
    auth *a = make_auth("HS256", write_file("secret", secret), "https://idp.example", "cqrs-api");
    struct {
        const char *extra;
        int status;
    } cases[] = {
        {"\"iss\":\"https://idp.example\",\"aud\":\"cqrs-api\"", 0},
        {"\"iss\":\"https://idp.example\",\"aud\":[\"other\",\"cqrs-api\"]", 0},
        {"\"iss\":\"https://evil.example\",\"aud\":\"cqrs-api\"", 401},
        {"\"aud\":\"cqrs-api\"", 401},
        {"\"iss\":\"https://idp.example\",\"aud\":\"other\"", 401},
        {"\"iss\":\"https://idp.example\",\"aud\":[\"other\"]", 401},
        {"\"iss\":\"https://idp.example\"", 401},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *c = claims(cases[i].extra);
        char *h = mint(JWT_ALG_HS256, secret, c);
        auth_result r;
        ck_assert_msg(check(a, h, NULL, &r) == cases[i].status, "case %zu: %s", i, r.detail);
        free(h);
        free(c);
    }
    auth_free(a);
}
END_TEST

START_TEST(the_tenant_claim_must_name_a_valid_tenant)
{
    auth *a = hs256();
    char long_name[AUTH_TENANT_MAX + 2];
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = 0;
    const char *bad[] = {"", "a b", "x'; DROP TABLE commands; --", "t\\u001f1", long_name};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *c = xasprintf("{\"tenant\":\"%s\",\"exp\":%lld}", bad[i], now + 300);
        char *h = mint(JWT_ALG_HS256, secret, c);
        auth_result r;
        ck_assert_msg(check(a, h, NULL, &r) == 401, "tenant '%s' accepted", bad[i]);
        free(h);
        free(c);
    }
    char *c = xasprintf("{\"tenant\":42,\"exp\":%lld}", now + 300);
    char *h = mint(JWT_ALG_HS256, secret, c);
    auth_result r;
    ck_assert_int_eq(check(a, h, NULL, &r), 401);
    free(h);
    free(c);
    long_name[AUTH_TENANT_MAX] = 0; /* exactly the longest */
    c = xasprintf("{\"tenant\":\"%s\",\"exp\":%lld}", long_name, now + 300);
    h = mint(JWT_ALG_HS256, secret, c);
    ck_assert_int_eq(check(a, h, NULL, &r), 0);
    ck_assert_str_eq(r.tenant, long_name);
    free(h);
    free(c);
    auth_free(a);
}
END_TEST

START_TEST(scopes_come_from_scope_or_scp)
{
    auth *a = hs256();
    struct {
        const char *extra;
        int status;
    } cases[] = {
        {"\"scope\":\"aggregates:read commands:write\"", 0},
        {"\"scope\":\"commands:writer commands:read\"", 403},
        {"\"scp\":[\"commands:read\",\"commands:write\"]", 0},
        {"\"scp\":\"commands:write\"", 0},
        {"\"scp\":[\"commands\"]", 403},
        {"", 403},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *c = claims(cases[i].extra);
        char *h = mint(JWT_ALG_HS256, secret, c);
        auth_result r;
        ck_assert_msg(check(a, h, "commands:write", &r) == cases[i].status, "case %zu: %s", i,
                      r.detail);
        if (cases[i].status == 403)
            ck_assert_str_eq(r.challenge, "Bearer realm=\"cqrs\", error=\"insufficient_scope\", "
                                          "scope=\"commands:write\"");
        ck_assert_int_eq(check(a, h, NULL, &r), 0); /* no scope asked: any token of ours */
        free(h);
        free(c);
    }
    auth_free(a);
}
END_TEST

/* auth_new refuses what cannot work, naming the key. */
START_TEST(bad_keys_are_start_up_errors)
{
    struct {
        const char *alg, *file_text, *want;
    } cases[] = {
        {"HS512", secret, "auth.algorithm"},
        {"none", secret, "auth.algorithm"},
        {"HS256", "short-secret\n", "at least 32"},
        {"RS256", rsa1024_pub, "1024 bits"},
        {"RS256", ec_pub, "RSA public key"},
        {"ES256", rsa_pub, "P-256"},
        {"RS256", "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n",
         "PEM public key"},
        {"RS256", secret, "PEM public key"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        auth_config c = {.algorithm = cases[i].alg,
                         .key_file = write_file("bad", cases[i].file_text),
                         .issuer = "",
                         .audience = "",
                         .tenant_claim = "tenant"};
        char err[256] = "";
        ck_assert_ptr_null(auth_new(&c, err, sizeof(err)));
        ck_assert_msg(strstr(err, cases[i].want), "case %zu: %s", i, err);
        ck_assert_msg(strncmp(err, "auth.", 5) == 0, "case %zu does not name the key: %s", i, err);
    }
    auth_config c = {.algorithm = "HS256",
                     .key_file = path_in_dir("missing"),
                     .issuer = "",
                     .audience = "",
                     .tenant_claim = "tenant"};
    char err[256] = "";
    ck_assert_ptr_null(auth_new(&c, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "auth.key_file"));
    c.key_file = "";
    ck_assert_ptr_null(auth_new(&c, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "auth.key_file: required"));
}
END_TEST

/* A secret file's one trailing line end is not part of the secret. */
START_TEST(a_secret_file_may_end_with_a_newline)
{
    char *text = xasprintf("%s\n", secret);
    auth *a = make_auth("HS256", write_file("secret-nl", text), "", "");
    char *c = claims("");
    char *h = mint(JWT_ALG_HS256, secret, c);
    auth_result r;
    ck_assert_int_eq(check(a, h, NULL, &r), 0);
    free(h);
    free(c);
    free(text);
    auth_free(a);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("auth");
    TCase *tc = tcase_create("jwt");
    tcase_add_unchecked_fixture(tc, setup_keys, teardown_keys);
    tcase_add_test(tc, each_algorithm_accepts_its_own_tokens);
    tcase_add_test(tc, missing_or_other_credentials_get_a_bare_challenge);
    tcase_add_test(tc, alg_none_is_refused);
    tcase_add_test(tc, algorithm_confusion_is_refused);
    tcase_add_test(tc, tampered_or_foreign_signatures_are_refused);
    tcase_add_test(tc, crit_headers_are_refused);
    tcase_add_test(tc, only_the_compact_form_is_accepted);
    tcase_add_test(tc, time_claims_are_checked_with_leeway);
    tcase_add_test(tc, issuer_and_audience_are_checked);
    tcase_add_test(tc, the_tenant_claim_must_name_a_valid_tenant);
    tcase_add_test(tc, scopes_come_from_scope_or_scp);
    tcase_add_test(tc, bad_keys_are_start_up_errors);
    tcase_add_test(tc, a_secret_file_may_end_with_a_newline);
    suite_add_tcase(s, tc);
    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}
