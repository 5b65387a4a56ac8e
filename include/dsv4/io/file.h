// Files dsv4 reads and writes, with the checks every path from the user needs.
//
// Reading: only regular files are read (a FIFO or a device named model.safetensors or config.json is refused
// at once instead of blocking or reading forever), and never more than a stated size.
// Writing (--logits-out, make-tiny): a regular file (or a new one) is written to PATH.tmp and renamed onto PATH,
// so a failed write leaves the old file intact; anything else that exists is written in place: a device such as
// /dev/null is written to, not replaced, and a symlink is followed (its target is written, never replaced by a
// regular file). A directory is refused before anything is created. Every write and the close are checked.
#pragma once

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>

namespace dsv4 {

// Throws kNotFound (missing), kInvalidArgument (not a regular file: directory, FIFO, device, socket).
// `what` names the file's role in messages ("config file", "tokenizer file", ...).
void require_regular_file(const std::string& path, const char* what);

// The whole file (regular files only), at most max_bytes; throws kIoError naming the file otherwise.
std::string read_text_file(const std::string& path, const char* what, int64_t max_bytes);

// Creates the output directory `dir` (and its parents) unless it exists. Throws kInvalidArgument when `dir` (or a
// parent) exists as something else, kIoError when it cannot be created; `what` names the directory's role.
void create_output_directory(const std::string& dir, const char* what);

// Writes `path` through `write` (see above). Throws kIoError naming the path when it is a directory, cannot be
// created, or any write / the close fails (e.g. ENOSPC on /dev/full).
void write_output_file(const std::string& path, const std::function<void(std::ostream&)>& write);

}  // namespace dsv4
