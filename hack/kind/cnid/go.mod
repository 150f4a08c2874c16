module pageserver-operator.local/hack/kind/cnid

go 1.24
