/* replay.h: `state-processor replay`, which copies a range of the commands topic back into it. */
#ifndef CQRS_REPLAY_H
#define CQRS_REPLAY_H

/*
 * Replays the commands topic from an offset or a time (docs/adr/0011-replay-and-redrive.md):
 * argv[0] is "replay", the rest its --key=value flags (--help lists them). Prints what it did,
 * or with --dry_run what it would do. Returns the process exit status.
 */
int replay_main(int argc, char **argv);

#endif
