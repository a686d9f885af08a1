/* redrive.h: `state-processor redrive`, which puts dead-lettered commands back into the topic. */
#ifndef CQRS_REDRIVE_H
#define CQRS_REDRIVE_H

/*
 * Redrives the dead letters selected by reason, time and id (docs/adr/0011-replay-and-redrive.md):
 * argv[0] is "redrive", the rest its --key=value flags (--help lists them; --id may be repeated).
 * Prints what it did, or with --dry_run what it would do. Returns the process exit status.
 */
int redrive_main(int argc, char **argv);

#endif
