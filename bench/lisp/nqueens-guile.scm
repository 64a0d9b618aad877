;; Guile version of nqueens.scm (same algorithm); timed inside the program.
(include "common-guile.scm")
(define (ok? row dist placed)
  (or (null? placed)
      (and (not (= (car placed) (+ row dist)))
           (not (= (car placed) (- row dist)))
           (not (= (car placed) row))
           (ok? row (+ dist 1) (cdr placed)))))
(define (try col n placed)
  (if (= col n)
      1
      (let loop ((row 1) (count 0))
        (if (> row n)
            count
            (loop (+ row 1)
                  (if (ok? row 1 placed)
                      (+ count (try (+ col 1) n (cons row placed)))
                      count))))))
(bench 300 (lambda () (try 0 8 '())))
