"""Networks: the stage-feature interface, teachers, and (in later modules) students."""
