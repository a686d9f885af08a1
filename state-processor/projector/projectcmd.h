/* projectcmd.h: `state-processor project`, the projector's main(). */
#ifndef CQRS_PROJECTCMD_H
#define CQRS_PROJECTCMD_H

/*
 * Runs the projector until SIGTERM or SIGINT: argv[0] is "project", the rest are its
 * --key=value flags (--help lists them). Returns the process exit status.
 */
int projectcmd_main(int argc, char **argv);

#endif
