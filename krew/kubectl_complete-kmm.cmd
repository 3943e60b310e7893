@echo off
rem kubectl (1.26+) runs this to complete `kubectl kmm <TAB>` on Windows: keep it on PATH next
rem to kubectl-kmm.exe.
kubectl-kmm.exe __complete %*
