package projector

// OnAnalyzeLook has fn told of each look of r's analyze loop; call it before Run.
func OnAnalyzeLook(r *Runner, fn func()) { r.looked = fn }
