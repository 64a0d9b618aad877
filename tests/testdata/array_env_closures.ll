; Four closures (code + a pointer to an i64[4] environment), a dispatcher whose dense 8-case
; switch becomes a jump table (absolute 32-bit table address, 64-bit entries under the static
; Small model) and a call to the host function codeheap_test_host_scale.
; mcjit_test.cc (MCJIT and RTDyldObjectLinkingLayer), with fib.ll.
define i64 @add_env(ptr %env, i64 %x) {
  %p = getelementptr i64, ptr %env, i64 0
  %v = load i64, ptr %p
  %r = add i64 %x, %v
  ret i64 %r
}
define i64 @mul_env(ptr %env, i64 %x) {
  %p = getelementptr i64, ptr %env, i64 1
  %v = load i64, ptr %p
  %r = mul i64 %x, %v
  ret i64 %r
}
define i64 @sub_env(ptr %env, i64 %x) {
  %p = getelementptr i64, ptr %env, i64 2
  %v = load i64, ptr %p
  %r = sub i64 %x, %v
  ret i64 %r
}
define i64 @xor_env(ptr %env, i64 %x) {
  %p = getelementptr i64, ptr %env, i64 3
  %v = load i64, ptr %p
  %r = xor i64 %x, %v
  ret i64 %r
}
define i64 @dispatch(i32 %which, ptr %env, i64 %x) {
entry:
  switch i32 %which, label %other [
    i32 0, label %c0
    i32 1, label %c1
    i32 2, label %c2
    i32 3, label %c3
    i32 4, label %c4
    i32 5, label %c5
    i32 6, label %c6
    i32 7, label %c7
  ]
c0:
  %r0 = call i64 @add_env(ptr %env, i64 %x)
  ret i64 %r0
c1:
  %r1 = call i64 @mul_env(ptr %env, i64 %x)
  ret i64 %r1
c2:
  %r2 = call i64 @sub_env(ptr %env, i64 %x)
  ret i64 %r2
c3:
  %r3 = call i64 @xor_env(ptr %env, i64 %x)
  ret i64 %r3
c4:
  %x4 = add i64 %x, 100
  %r4 = call i64 @add_env(ptr %env, i64 %x4)
  ret i64 %r4
c5:
  %x5 = shl i64 %x, 1
  %r5 = call i64 @mul_env(ptr %env, i64 %x5)
  ret i64 %r5
c6:
  %x6 = sub i64 0, %x
  %r6 = call i64 @sub_env(ptr %env, i64 %x6)
  ret i64 %r6
c7:
  %x7 = or i64 %x, 4096
  %r7 = call i64 @xor_env(ptr %env, i64 %x7)
  ret i64 %r7
other:
  ret i64 -1
}
declare i64 @codeheap_test_host_scale(i64)
define i64 @call_host(i64 %x) {
  %y = add i64 %x, 1
  %r = call i64 @codeheap_test_host_scale(i64 %y)
  %s = add i64 %r, 7
  ret i64 %s
}
