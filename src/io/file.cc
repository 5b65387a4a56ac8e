#include "dsv4/io/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "dsv4/core/status.h"

namespace dsv4 {
namespace {

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

}  // namespace

void require_regular_file(const std::string& path, const char* what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    fail(errno == ENOENT ? StatusCode::kNotFound : StatusCode::kIoError, "cannot open ", what, " '", path,
         "': ", std::strerror(errno));
  }
  DSV4_CHECK_ARG(S_ISREG(st.st_mode), what, " '", path, "' is ", file_kind(st.st_mode), ", not a regular file");
}

std::string read_text_file(const std::string& path, const char* what, int64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused right after, by fstat).
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    fail(errno == ENOENT ? StatusCode::kNotFound : StatusCode::kIoError, "cannot open ", what, " '", path,
         "': ", std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const std::string kind = S_ISREG(st.st_mode) ? "unreadable" : file_kind(st.st_mode);
    ::close(fd);
    fail(StatusCode::kInvalidArgument, what, " '", path, "' is ", kind, ", not a regular file");
  }
  if (st.st_size > max_bytes) {
    ::close(fd);
    fail(StatusCode::kIoError, what, " '", path, "' is ", st.st_size, " bytes, more than the ", max_bytes,
         " this file may hold");
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::read(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      fail(StatusCode::kIoError, "reading ", what, " '", path, "' failed",
           n == 0 ? std::string(" (file shrank)") : str_cat(": ", std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return text;
}

void create_output_directory(const std::string& dir, const char* what) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    DSV4_CHECK_ARG(S_ISDIR(st.st_mode), what, " '", dir, "' exists and is ",
                   S_ISREG(st.st_mode) ? "a regular file" : file_kind(st.st_mode), ", not a directory");
    return;
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail(StatusCode::kIoError, "cannot create ", what, " '", dir, "': ", ec.message());
}

void write_output_file(const std::string& path, const std::function<void(std::ostream&)>& write) {
  struct stat st {
  }, lst{};
  const bool exists = ::stat(path.c_str(), &st) == 0;  // follows symlinks
  const bool is_link = ::lstat(path.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode);
  if (exists && S_ISDIR(st.st_mode)) fail(StatusCode::kIoError, "cannot write '", path, "': it is a directory");
  const bool in_place = is_link || (exists && !S_ISREG(st.st_mode));
  const std::string target = in_place ? path : path + ".tmp";
  auto write_to = [&](const std::string& file) {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    if (!out) fail(StatusCode::kIoError, "cannot write '", file, "': ", std::strerror(errno));
    write(out);
    out.flush();
    const bool written = static_cast<bool>(out);
    const int err = errno;
    out.close();
    if (!written || !out) {
      fail(StatusCode::kIoError, "writing '", file, "' failed: ", std::strerror(err != 0 ? err : errno));
    }
  };
  if (in_place) {
    write_to(target);
    return;
  }
  try {
    write_to(target);
  } catch (...) {
    std::remove(target.c_str());
    throw;
  }
  if (std::rename(target.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(target.c_str());
    fail(StatusCode::kIoError, "cannot rename '", target, "' to '", path, "': ", std::strerror(err));
  }
}

}  // namespace dsv4
