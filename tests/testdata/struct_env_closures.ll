; Six closures (code + a pointer to an { a, b } environment) and a dense six-way switch over
; them, which compiles to a jump table. engine_test.cc (OrcEngineCodegen), with fib.ll.
%env = type { i64, i64 }

define i64 @add_a(ptr %env, i64 %x) {
  %p = getelementptr %env, ptr %env, i32 0, i32 0
  %a = load i64, ptr %p
  %r = add i64 %a, %x
  ret i64 %r
}
define i64 @mul_b(ptr %env, i64 %x) {
  %p = getelementptr %env, ptr %env, i32 0, i32 1
  %b = load i64, ptr %p
  %r = mul i64 %b, %x
  ret i64 %r
}
define i64 @sub_a(ptr %env, i64 %x) {
  %p = getelementptr %env, ptr %env, i32 0, i32 0
  %a = load i64, ptr %p
  %r = sub i64 %x, %a
  ret i64 %r
}
define i64 @xor_b(ptr %env, i64 %x) {
  %p = getelementptr %env, ptr %env, i32 0, i32 1
  %b = load i64, ptr %p
  %r = xor i64 %b, %x
  ret i64 %r
}
define i64 @sum_ab(ptr %env, i64 %x) {
  %pa = getelementptr %env, ptr %env, i32 0, i32 0
  %pb = getelementptr %env, ptr %env, i32 0, i32 1
  %a = load i64, ptr %pa
  %b = load i64, ptr %pb
  %s = add i64 %a, %b
  %r = add i64 %s, %x
  ret i64 %r
}
define i64 @shl_a(ptr %env, i64 %x) {
  %p = getelementptr %env, ptr %env, i32 0, i32 0
  %a = load i64, ptr %p
  %r = shl i64 %x, %a
  ret i64 %r
}

define i64 @dispatch(i64 %which, ptr %env, i64 %x) {
entry:
  switch i64 %which, label %other [
    i64 0, label %c0
    i64 1, label %c1
    i64 2, label %c2
    i64 3, label %c3
    i64 4, label %c4
    i64 5, label %c5
  ]
c0:
  %r0 = call i64 @add_a(ptr %env, i64 %x)
  ret i64 %r0
c1:
  %r1 = call i64 @mul_b(ptr %env, i64 %x)
  ret i64 %r1
c2:
  %r2 = call i64 @sub_a(ptr %env, i64 %x)
  ret i64 %r2
c3:
  %r3 = call i64 @xor_b(ptr %env, i64 %x)
  ret i64 %r3
c4:
  %r4 = call i64 @sum_ab(ptr %env, i64 %x)
  ret i64 %r4
c5:
  %r5 = call i64 @shl_a(ptr %env, i64 %x)
  ret i64 %r5
other:
  ret i64 -1
}
