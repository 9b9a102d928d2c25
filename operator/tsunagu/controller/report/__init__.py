"""Reports: the status book, the writer that sends statuses and Events, Region status."""
