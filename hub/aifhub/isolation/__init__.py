"""Keeping local sandboxes apart and within limits, as root: control groups (memory, CPU, processes), a
bubblewrap namespace (only their own GPUs' device nodes, their own processes, private /tmp), and checks that
learners' uids can reach what their sandboxes need."""
