// lhcml-infer: the one error type for bad input (exit code 2, one clear message).
#pragma once

#include <stdexcept>
#include <string>

namespace lhcml {

// A problem with what the user gave (model, input file, options): the message names the
// problem and the fix; main() prints it and exits with code 2, writing no output file.
class InputError : public std::runtime_error {
 public:
  explicit InputError(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace lhcml
