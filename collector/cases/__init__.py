"""Cases with four-eyes confirmation, HR confirmation and the exactly-once hand-off to payroll."""
