"""Review: screening (初步筛选), the major-project joint review (联审联批) and recognition (认定)."""
