;; Takeuchi's function: deep, non-tail recursion with three arguments, and the
;; Gabriel-benchmark variant on lists (ctak-free "takl").

(define (tak x y z)
  (if (not (< y x))
      z
      (tak (tak (- x 1) y z)
           (tak (- y 1) z x)
           (tak (- z 1) x y))))

(display "(tak 18 12 6) = ") (display (tak 18 12 6)) (newline)
(display "(tak 22 16 8) = ") (display (tak 22 16 8)) (newline)

;; takl: numbers represented as list lengths.
(define (listn n)
  (if (= n 0) '() (cons n (listn (- n 1)))))

(define (shorter? x y)
  (and (not (null? y))
       (or (null? x)
           (shorter? (cdr x) (cdr y)))))

(define (mas x y z)
  (if (not (shorter? y x))
      z
      (mas (mas (cdr x) y z)
           (mas (cdr y) z x)
           (mas (cdr z) x y))))

(display "(takl 18 12 6) = ") (display (length (mas (listn 18) (listn 12) (listn 6)))) (newline)
