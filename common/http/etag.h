/*
 * etag.h: entity-tags and the lists of If-Match / If-None-Match (RFC 9110 §8.8.3, §13.1.1,
 * §13.1.2): parsing and the strong and weak comparisons. Pure: no allocation, no I/O.
 */
#ifndef CQRS_ETAG_H
#define CQRS_ETAG_H

#include <stdbool.h>
#include <stddef.h>

/* Most entity-tags a list may hold; a longer one is refused as invalid. */
#define ETAG_LIST_MAX 64

/* One entity-tag of a list: W/ or not, and its opaque-tag's characters between the quotes. */
typedef struct etag_item {
    bool weak;
    const char *tag; /* borrowed from the parsed field value; not NUL-terminated */
    size_t len;
} etag_item;

/* A parsed field value: "*" (any), or up to ETAG_LIST_MAX entity-tags. */
typedef struct etag_list {
    bool any;
    size_t n;
    etag_item tags[ETAG_LIST_MAX];
} etag_list;

/*
 * Parses value as "*" / #entity-tag: comma-separated, optional whitespace around the commas,
 * empty elements allowed, at least one entity-tag; W/ is case-sensitive. False (out undefined)
 * when value does not follow the grammar or holds more than ETAG_LIST_MAX entity-tags. The
 * tags borrow from value.
 */
bool etag_list_parse(const char *value, etag_list *out) __attribute__((warn_unused_result));

/*
 * True when the list matches a current representation whose entity-tag is strong with the
 * opaque-tag current (without quotes, e.g. "7"): "*" always does; otherwise a tag of the list
 * equal to it, by strong comparison (a weak tag never matches: If-Match) or weak comparison
 * (W/ ignored: If-None-Match).
 */
bool etag_list_matches(const etag_list *l, const char *current, bool strong);

/* The length of the text "\"<version>\"" for any long long, with its NUL. */
#define ETAG_VERSION_LEN 24

/* Writes the strong entity-tag of an aggregate version, "\"<version>\"", into out. */
void etag_of_version(long long version, char out[ETAG_VERSION_LEN]);

#endif
