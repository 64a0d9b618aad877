;; Chez Scheme version of redefine.scm: caller is compiled once (at run time, in the interaction
;; environment, so that f is a top-level variable it reads at each call), then f is redefined n
;; times by `compile` of (define (f x) (+ x i)), and caller is called once after each.
(import (chezscheme))
(include "common-chez.ss")
(define n 10000)
(compile '(define (f x) (- x)))
(compile '(define (caller x) (f x)))
(define call-caller (top-level-value 'caller))
(define (redefine)
  (let loop ([i 0] [acc 0])
    (if (= i n)
        acc
        (begin
          (compile `(define (f x) (+ x ,i)))
          (loop (+ i 1) (+ acc (call-caller 1)))))))
(timed "redefine" n redefine)
