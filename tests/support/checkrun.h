/* checkrun.h: running a test program's Check suite, the same way in every test. */
#ifndef CQRS_CHECKRUN_H
#define CQRS_CHECKRUN_H

#include <check.h>

/*
 * Runs every test of s (Check's normal output) and frees it; returns the number of tests that
 * failed. CK_FORK_GETENV runs each test in a child process unless CK_FORK=no is set; CK_NOFORK
 * is for the tests whose services are children of the test process itself.
 */
int check_run(Suite *s, enum fork_status fork);

#endif
