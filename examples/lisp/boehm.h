// Every file of the Lisp that talks to Boehm GC includes it through here, so that all agree
// with gcglue/ on the thread configuration: threads register explicitly
// (Runtime::register_current_thread) instead of through redirected pthread_create.
#pragma once

#define GC_THREADS
#define GC_NO_THREAD_REDIRECTS
#include <gc/gc.h>
#include <gc/gc_allocator.h>
