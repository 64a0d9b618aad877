; Two JIT frames between the caller and a host function that throws: jit_outer(x) calls
; jit_inner(x), which calls host_throw(x + 1). The test defines host_throw.
; engine_test.cc (ORC/JITLink) and mcjit_test.cc (MCJIT).
declare void @host_throw(i64)
define i64 @jit_inner(i64 %x) uwtable {
  %y = add i64 %x, 1
  call void @host_throw(i64 %y)
  ret i64 0
}
define i64 @jit_outer(i64 %x) uwtable {
  %r = call i64 @jit_inner(i64 %x)
  %s = add i64 %r, 1
  ret i64 %s
}
