"""rnnstream's public API: the .proto source under rnnstream/v1 and its generated modules."""
