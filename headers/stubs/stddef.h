#include "_types.h"
