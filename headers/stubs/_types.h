/* Minimal libc type names for pycparser. These typedefs are never emitted into the
   cdef: cffi knows every one of these names natively. */
#ifndef LLAMAPY_STUB_TYPES_H
#define LLAMAPY_STUB_TYPES_H
typedef signed char int8_t;
typedef short int16_t;
typedef int int32_t;
typedef long long int64_t;
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
typedef long intptr_t;
typedef unsigned long uintptr_t;
typedef unsigned long size_t;
typedef long ssize_t;
typedef long ptrdiff_t;
typedef int wchar_t;
typedef _Bool bool;
typedef struct _llamapy_stub_FILE FILE;
typedef struct _llamapy_stub_va_list *va_list;
#define true 1
#define false 0
#define NULL 0
#endif
