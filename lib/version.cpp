// securememory: the library's version (include/securememory/version.hpp).
#include <securememory/version.hpp>

namespace securememory {

std::string_view version() noexcept { return SECUREMEMORY_VERSION_STRING; }

}  // namespace securememory
