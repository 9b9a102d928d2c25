module tsunagu.io/benchlimit

go 1.26
