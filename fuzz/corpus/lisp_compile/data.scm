'(1 (2 . 3) "str\n" #\a #\space #t #f sym) ; comment
#| block |# (quote x) "tab\t"
