// Package orders is the bench's shared-rows workload: orders keyed by order id, so
// one order's events stay in one partition while the customer they count towards is
// shared by orders in every partition. Its read model folds into orders and
// customers (totals per customer): the case where partitions write the same rows.
//
// The handlers (projection.go) use readmodel.Writer.Exec, statement by statement;
// the independent fold (fold.go) says what they must build.
package orders
