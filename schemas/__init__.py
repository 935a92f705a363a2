"""Types that flow between stages and the schemas of everything egoveil writes."""
