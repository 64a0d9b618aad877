; Code, read-only data, initialized and zero-initialized data, a process symbol (labs: reached
; through a GOT entry and a stub) and an internal helper, which is no definition of the module's.
; engine_test.cc (linkModule).
declare i64 @labs(i64)
@counter = global i64 5
@zeros = global [32 x i64] zeroinitializer
@table = constant [4 x i64] [i64 10, i64 20, i64 30, i64 40]
define internal i64 @helper(i64 %x) {
  %r = call i64 @labs(i64 %x)
  ret i64 %r
}
define i64 @bump() {
  %v = load i64, ptr @counter
  %n = add i64 %v, 1
  store i64 %n, ptr @counter
  ret i64 %n
}
define i64 @pick(i64 %i) {
  %p = getelementptr [4 x i64], ptr @table, i64 0, i64 %i
  %v = load i64, ptr %p
  %z = getelementptr [32 x i64], ptr @zeros, i64 0, i64 %i
  %w = load i64, ptr %z
  %s = add i64 %v, %w
  %r = call i64 @helper(i64 %s)
  ret i64 %r
}
