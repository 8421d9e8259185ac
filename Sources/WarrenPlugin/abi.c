#include "warren_plugin.h"

/* The target exists to ship the header; this keeps it a valid C target. */
const uint32_t warren_plugin_abi_version = WARREN_PLUGIN_ABI_VERSION;
