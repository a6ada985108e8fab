/* await.h: the umbrella header; includes every libawait module. */
#ifndef AWAIT_H
#define AWAIT_H

#include "await/core.h"
#include "await/loop.h"

#endif /* AWAIT_H */
