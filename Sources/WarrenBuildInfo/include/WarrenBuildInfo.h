#ifndef WARREN_BUILD_INFO_H
#define WARREN_BUILD_INFO_H

/// The commit warren was built from (abbreviated, "-dirty" when the tree had changes), or an
/// empty string when the build could not tell (a source tree without git and no
/// WARREN_GIT_COMMIT in the build's environment).
const char *warren_build_commit(void);

#endif
