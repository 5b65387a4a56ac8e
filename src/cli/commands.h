// Subcommands of the dsv4 CLI. Each registers its options on the app and runs from a callback; errors
// propagate as dsv4::Error and become "error: ..." with exit code 1 in main().
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "dsv4/core/tensor.h"

namespace dsv4::cli {

void register_make_tiny(CLI::App& app);
void register_info(CLI::App& app);
void register_score(CLI::App& app);
void register_generate(CLI::App& app);

// Shared option parsing.
Device parse_device(const std::string& name);
std::vector<int32_t> parse_ids(const std::string& csv);
// Byte-level ids: each UTF-8 byte b of the text becomes token id b.
std::vector<int32_t> byte_level_ids(const std::string& text);

}  // namespace dsv4::cli
