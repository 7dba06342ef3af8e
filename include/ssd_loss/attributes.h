// The op's attributes, declared once: SSD_LOSS_ATTRIBUTES below is the single table of their names,
// types, defaults and value rules. Everything that lists them is generated from it: the core's
// Options and Attributes structs and its validator (make_options, options.cc), the Paddle op's
// attribute list and kernel parameters (src/paddle/ssd_loss_op.cc), and the pybind11 modules'
// keyword arguments and attribute table (src/python/numpy_args.h), which the Python wrapper reads.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ssd_loss {

enum class MatchType { kBipartite, kPerPrediction };
enum class MiningType {
  kMaxNegative,  // fluid's: the hardest unmatched priors, neg_pos_ratio per positive
  kHardExample,  // OHEM as in fluid's mine_hard_examples: the sample_size hardest priors of all
};
// What each image's loss is divided by (Caffe's LossParameter modes).
enum class Normalization {
  kValid,      // positives in the whole batch, at least 1 (fluid's normalize=True)
  kFull,       // all priors of the batch, N * Np
  kBatchSize,  // N
  kNone,       // 1 (fluid's normalize=False)
};
enum class NegOverlapMode {
  kFluid,  // every unmatched prior may be a negative (neg_overlap has no effect, as in fluid)
  kCaffe,  // unmatched priors whose best IoU with a gt is >= neg_overlap are never negatives
};

// The names an enum attribute takes, in the order messages list them.
template <typename E>
using Choices = std::vector<std::pair<E, const char*>>;
inline const Choices<MatchType>& choices(MatchType) {
  static const Choices<MatchType> c{{MatchType::kBipartite, "bipartite"},
                                    {MatchType::kPerPrediction, "per_prediction"}};
  return c;
}
inline const Choices<MiningType>& choices(MiningType) {
  static const Choices<MiningType> c{{MiningType::kMaxNegative, "max_negative"},
                                     {MiningType::kHardExample, "hard_example"}};
  return c;
}
inline const Choices<Normalization>& choices(Normalization) {
  static const Choices<Normalization> c{{Normalization::kValid, "valid"},
                                        {Normalization::kFull, "full"},
                                        {Normalization::kBatchSize, "batch_size"},
                                        {Normalization::kNone, "none"}};
  return c;
}
inline const Choices<NegOverlapMode>& choices(NegOverlapMode) {
  static const Choices<NegOverlapMode> c{{NegOverlapMode::kFluid, "fluid"},
                                         {NegOverlapMode::kCaffe, "caffe"}};
  return c;
}

// The value rules of the table's last column (checked by make_options, options.cc).
namespace rule {
struct Any {};           // any value (background_label: checked against C where C is known)
struct UnitInterval {};  // a float in [0, 1]
struct Finite {};        // a finite float
struct Positive {};      // a finite float > 0
struct AtLeastZero {     // an int >= 0; `note` follows the expectation in the message
  const char* note;
};
struct OneOf {};  // one of the names of choices(the Options field's enum)
}  // namespace rule

// One row per attribute, in the op's attribute order:
//   X(name, attribute type, Options field type, default, rule)
// The attribute type is what the op stores and its kernel receives (int, float or std::string:
// Paddle's custom-op attribute types); the Options field holds the parsed value (an enum for a
// std::string attribute, whose default is then given as the enum value).
#define SSD_LOSS_ATTRIBUTES(X)                                                                     \
  X(background_label, int, int64_t, 0, ::ssd_loss::rule::Any{})                                    \
  X(overlap_threshold, float, float, 0.5f, ::ssd_loss::rule::UnitInterval{})                       \
  X(neg_pos_ratio, float, float, 3.0f, ::ssd_loss::rule::Positive{})                               \
  X(neg_overlap, float, float, 0.5f, ::ssd_loss::rule::UnitInterval{})                             \
  X(loc_loss_weight, float, float, 1.0f, ::ssd_loss::rule::Finite{})                               \
  X(conf_loss_weight, float, float, 1.0f, ::ssd_loss::rule::Finite{})                              \
  X(match_type, std::string, ::ssd_loss::MatchType, ::ssd_loss::MatchType::kPerPrediction,         \
    ::ssd_loss::rule::OneOf{})                                                                     \
  X(mining_type, std::string, ::ssd_loss::MiningType, ::ssd_loss::MiningType::kMaxNegative,        \
    ::ssd_loss::rule::OneOf{})                                                                     \
  X(normalization, std::string, ::ssd_loss::Normalization, ::ssd_loss::Normalization::kValid,      \
    ::ssd_loss::rule::OneOf{})                                                                     \
  /* hard_example: the priors kept per image; 0 means not given */                                 \
  X(sample_size, int, int64_t, 0, ::ssd_loss::rule::AtLeastZero{" (0: not given)"})                \
  /* max_negative: mine at least this many negatives per image */                                  \
  X(min_negatives_per_image, int, int64_t, 0, ::ssd_loss::rule::AtLeastZero{""})                   \
  X(neg_overlap_mode, std::string, ::ssd_loss::NegOverlapMode,                                     \
    ::ssd_loss::NegOverlapMode::kFluid, ::ssd_loss::rule::OneOf{})

// A default as the attribute holds it: enum defaults by their name.
template <typename T>
T attribute_default(T value) {
  return value;
}
template <typename E>
std::string enum_name(E value) {
  for (const auto& choice : choices(value)) {
    if (choice.first == value) return choice.second;
  }
  return {};
}
inline std::string attribute_default(MatchType v) { return enum_name(v); }
inline std::string attribute_default(MiningType v) { return enum_name(v); }
inline std::string attribute_default(Normalization v) { return enum_name(v); }
inline std::string attribute_default(NegOverlapMode v) { return enum_name(v); }

// The parsed, checked attributes the kernels read.
struct Options {
#define SSD_LOSS_OPTION_FIELD(name, attr_type, option_type, default_value, rule) \
  option_type name = default_value;
  SSD_LOSS_ATTRIBUTES(SSD_LOSS_OPTION_FIELD)
#undef SSD_LOSS_OPTION_FIELD
};

// The attributes as the op stores them, defaults included.
struct Attributes {
#define SSD_LOSS_ATTRIBUTE_FIELD(name, attr_type, option_type, default_value, rule) \
  attr_type name = attribute_default(default_value);
  SSD_LOSS_ATTRIBUTES(SSD_LOSS_ATTRIBUTE_FIELD)
#undef SSD_LOSS_ATTRIBUTE_FIELD
};

// The one validator: Options from the attributes, every value rule checked. Returns an empty
// string, or a message naming the (first) bad attribute, the expected and the received values.
std::string make_options(const Attributes& attributes, Options* options);

// background_label against the number of classes C (known only with the data).
std::string check_background_label(int64_t background_label, int64_t num_classes);

}  // namespace ssd_loss
