(let loop ((i 0) (acc '())) (cond ((= i 10) (reverse acc)) (else (loop (+ i 1) (cons (* i i) acc)))))
