# Sourced by scripts/test.sh and scripts/fuzz.sh: sanitizer settings for the ASAN + UBSan build. A sanitizer
# report ends the process with an exit code of its own (ASAN 86, UBSan 87; dsv4's own errors exit 1), UBSan
# halts on its first report, and both print a stack trace.
export ASAN_OPTIONS="exitcode=86:abort_on_error=0:detect_leaks=1:strict_string_checks=1:check_initialization_order=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="halt_on_error=1:exitcode=87:print_stacktrace=1"
# Leaks inside libgomp / libomp thread pools are not dsv4's.
export LSAN_OPTIONS="exitcode=86:suppressions=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lsan.supp"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # ctest -j2 runs tests side by side: no OpenMP oversubscription
