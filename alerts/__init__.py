"""Surfaces that leave the terminal: report rendering (markdown, JSON) today; Slack, email and schedules next."""
