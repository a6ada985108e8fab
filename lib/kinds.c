/* SPDX-License-Identifier: MIT */
/* kinds.c: the registry of future kinds: each kind's operations table at
 * its number, as libevent lists its backends in one table. */
#include "config.h"

#include "kinds-internal.h"

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(K__KINDS <= AW__KINDS_MAX, "too many kinds of future");
#endif

const struct aw__future_ops *const aw__future_kinds[AW__KINDS_MAX] = {
    [K_PLAIN] = &aw__plain_ops,
    [K_THEN] = &aw__then_ops,
    [K_CATCH] = &aw__catch_ops,
    [K_FINALLY] = &aw__finally_ops,
    [K_SHIELD] = &aw__shield_ops,
    [K_GATHER] = &aw__gather_ops,
    [K_ANY] = &aw__any_ops,
    [K_RACE] = &aw__race_ops,
    [K_WAIT] = &aw__wait_ops,
    [K_WAIT_FOR] = &aw__wait_for_ops,
    [K_AS_COMPLETED] = &aw__as_completed_ops,
    [K_TASK] = &aw__task_ops,
    [K_SLEEP] = &aw__sleep_ops,
    [K_GROUP] = &aw__group_ops,
    [K_GRANT] = &aw__grant_ops,
};
