#include "WarrenBuildInfo.h"

// Package.swift defines WARREN_GIT_COMMIT for this file only, so a new commit recompiles this
// translation unit and relinks, nothing else.
#ifndef WARREN_GIT_COMMIT
#define WARREN_GIT_COMMIT ""
#endif

const char *warren_build_commit(void) { return WARREN_GIT_COMMIT; }
