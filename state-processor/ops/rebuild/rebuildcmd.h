/* rebuildcmd.h: `state-processor rebuild`, the projection rebuild's main(). */
#ifndef CQRS_REBUILDCMD_H
#define CQRS_REBUILDCMD_H

/*
 * Rebuilds one projection table (rebuild.h): argv[0] is "rebuild", the rest are its --key=value
 * flags (--help lists them). Progress goes to stderr, the result to stdout (JSON unless stdout
 * is a terminal). Returns the exit status: 0 done, 1 failed, 130 interrupted.
 */
int rebuildcmd_main(int argc, char **argv);

#endif
