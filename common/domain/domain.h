/* domain.h: domains as data (schemas/domains/<aggregate>.json): validates and applies commands. */
#ifndef CQRS_DOMAIN_H
#define CQRS_DOMAIN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Every aggregate and command defined by the domain files of one directory; immutable. */
typedef struct domain_registry domain_registry;
/* One command type, e.g. "account.deposit": its payload schema, event name and apply rule. */
typedef struct domain_command domain_command;

typedef enum {
    DOMAIN_OK = 0,
    DOMAIN_INVALID_PAYLOAD, /* payload fails the command's payload schema */
    DOMAIN_NOT_FOUND,       /* requires present, aggregate absent or deleted */
    DOMAIN_ALREADY_EXISTS,  /* requires absent, aggregate present */
    DOMAIN_PRECONDITION,    /* a "where" field differs, or a field the op needs is unusable */
    DOMAIN_INVARIANT,       /* the new state fails the state schema */
} domain_outcome;

/*
 * Loads every *.json in dir, sorted by name (docs/domains.md gives the format). Returns NULL with
 * err naming the file and the problem on failure. Caller frees with domain_registry_free().
 */
domain_registry *domain_registry_load(const char *dir, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Frees the registry and every command borrowed from it; NULL is a no-op. */
void domain_registry_free(domain_registry *r);

/* Looks up a command type such as "account.deposit"; NULL if unknown. Borrowed from r. */
const domain_command *domain_registry_find(const domain_registry *r, const char *command_type);

/* True if an aggregate type of this name is defined. */
bool domain_registry_has_aggregate(const domain_registry *r, const char *aggregate_type);

/* Number of commands in the registry, for listing them. */
size_t domain_registry_command_count(const domain_registry *r);

/* The i-th command in command type order (i < domain_registry_command_count()); borrowed. */
const domain_command *domain_registry_command_at(const domain_registry *r, size_t i);

/* The command type, e.g. "account.deposit"; borrowed from the registry. */
const char *domain_command_type(const domain_command *c);

/* The aggregate type the command acts on, e.g. "account"; borrowed from the registry. */
const char *domain_command_aggregate(const domain_command *c);

/* The event recorded when the command applies, e.g. "account.deposited"; borrowed. */
const char *domain_command_event(const domain_command *c);

/* Validates a payload (borrowed) against the command's payload schema; errors as jschema. */
bool domain_command_validate(const domain_command *c, const json_t *payload, json_t *errors)
    __attribute__((warn_unused_result));

/*
 * Applies the command. state: the current state (borrowed), or NULL when the aggregate is absent
 * or deleted (JSON null counts as deleted too). payload is borrowed. On DOMAIN_OK *new_state
 * receives a new reference the caller releases with json_decref() (JSON null when the aggregate
 * is deleted). On any other outcome *new_state is NULL and, when errors is a JSON array,
 * explanations are appended in the jschema_validate() shape; precondition failures use keyword
 * "requires" (pointer "") or "where" (pointer to the field). Validates the payload first.
 * Pure: no I/O, no shared state, safe to call from several threads.
 */
domain_outcome domain_command_apply(const domain_command *c, const json_t *state,
                                    const json_t *payload, json_t **new_state, json_t *errors)
    __attribute__((warn_unused_result));

/* Stable lower-case name of an outcome, e.g. "invariant"; "unknown" for other values. */
const char *domain_outcome_name(domain_outcome o);

/*
 * The command's payload schema as written in its domain file (before compilation), for
 * documentation; borrowed from the registry, never NULL for a loaded command.
 */
const json_t *domain_command_payload_schema(const domain_command *c);

/* The command's "description" in its domain file; NULL when it has none. Borrowed. */
const char *domain_command_description(const domain_command *c);

/* Number of aggregate types in the registry, for listing them. */
size_t domain_registry_aggregate_count(const domain_registry *r);

/* The i-th aggregate type's name, in domain file name order; NULL when i is out of range. */
const char *domain_registry_aggregate_name(const domain_registry *r, size_t i);

/* The i-th aggregate's state schema as written; borrowed, NULL when i is out of range. */
const json_t *domain_registry_aggregate_state_schema(const domain_registry *r, size_t i);

/* The i-th aggregate's "description" in its domain file; NULL when it has none. Borrowed. */
const char *domain_registry_aggregate_description(const domain_registry *r, size_t i);

struct projection;
/* The projection (read model table) of an aggregate type; NULL if the type is unknown. Borrowed. */
const struct projection *domain_registry_projection(const domain_registry *r,
                                                    const char *aggregate_type);

#endif
