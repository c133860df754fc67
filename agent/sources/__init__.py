"""Where events come from: OS facilities turned into domain events. One module per facility."""
