"""actloc: temporal action localization from a cached frozen backbone."""
