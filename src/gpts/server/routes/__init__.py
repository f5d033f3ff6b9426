"""One router per API area; each is thin: parse, call the serving layer or the store, shape the reply."""
