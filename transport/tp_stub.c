/* The stub behind every ops-table slot a transport does not implement (never NULL). */
#include "transport/transport.h"

hvd_status_t hvd_tp_not_supported(void) { return HVD_ERR_NOT_SUPPORTED; }
